"""The method (arXiv 2106.08301): block costs and projections (``unify``), ADMM training
(``admm``), post-training projection (``posttrain``), calibration on unlabelled data
(``calibrate``), distillation (``distill``) and the end-to-end ``demo``. Needs torch (except
``unify`` and ``posttrain``, numpy only); a device decoding streams never imports it.
"""
