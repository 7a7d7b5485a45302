"""Training samples: on-disk format (:mod:`.store`), building (:mod:`.build`), reading (:mod:`.dataset`)."""
