"""The accuracy side: the study grid (:mod:`~nmsim.accuracy.study`, torch), its tables
(:mod:`~nmsim.accuracy.table`, torch-free) and the summary of finished tables (:mod:`~nmsim.accuracy.summary`)."""
