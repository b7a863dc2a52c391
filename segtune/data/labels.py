"""Label values shared by every dataset builder and by the training side that reads their masks."""

IGNORE_INDEX = 255  # mask pixels that count for nothing: VOC outlines, the pets-binary border, padding
