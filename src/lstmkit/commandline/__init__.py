"""What every command group of ``lstmkit`` (``lstmkit <task>``, ``inspect``, ``export``) shares, below
all of them (:mod:`lstmkit.cli` puts the groups together):

* :mod:`~lstmkit.commandline.messages`: the console the commands print on, and the way notes, warnings
  and errors reach the user: one line on stderr, the library's input errors with exit code 2;
* :mod:`~lstmkit.commandline.options`: the options more than one group takes (``--checkpoint``,
  ``--seed``, ``--threads``) and the intra-op threads a command runs with.
"""
