"""The dictionary keys shared by datalists, transforms and the pipeline, defined once."""

IMAGE = "image"
LABEL = "label"
CASE_ID = "case_id"
#: foreground mask (body) computed from the image, used for cropping
FOREGROUND = "foreground"
#: model output in dictionaries that travel through post-processing
PRED = "pred"
