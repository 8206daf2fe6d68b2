"""Variable-length sequence classification: UEA JapaneseVowels (``sktime``) or a long-format CSV,
a recurrent stack read through ``lengths=``, accuracy and a confusion matrix
(``lstmkit classify train|evaluate|predict``)."""
