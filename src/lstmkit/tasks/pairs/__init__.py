"""Sentence-pair similarity: King James / World English Bible verse pairs (``pythonbible``) or a
Quora Question Pairs TSV, a siamese (or single-sequence) BiLSTM encoder read through ``lengths=``,
accuracy, F1, ROC-AUC and a decision threshold chosen on validation
(``lstmkit pairs train|evaluate|predict``)."""
