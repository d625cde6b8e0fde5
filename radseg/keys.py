"""The dictionary keys shared by datalists, transforms and the pipeline, defined once."""

IMAGE = "image"
LABEL = "label"
CASE_ID = "case_id"
#: foreground mask (body) computed from the image, used for cropping
FOREGROUND = "foreground"
#: model output in dictionaries that travel through post-processing
PRED = "pred"
#: per-axial-slice labels of the 2D branch (uint8, one value per slice along z)
SLICE_LIVER = "slice_liver"
SLICE_LESION = "slice_lesion"
#: world position (RAS mm, superior positive) of each axial slice of a slice stack
SLICE_Z_MM = "slice_z_mm"
