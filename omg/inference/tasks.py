"""The names the inference API accepts, in a module that imports nothing heavy (the command line's choices read
them without loading torch)."""

IMAGE_TASKS = ("panoptic", "instance", "semantic", "interactive")
VIDEO_TASKS = ("vis", "vps", "vss", "vos")
#: where post-processing runs (:mod:`omg.inference.core`): at the original image size (the released code) or at
#: the resized input (ours: far cheaper on large images)
POSTPROCESS_AT = ("original", "input")
#: how a prompted mask gets its label when a vocabulary is given (the released code labels none; both are ours):
#: "queries", the class of the object query whose mask best matches it (as panoptic classifies it), the frozen
#: CLIP's where no query's mask overlaps it; "clip", the frozen CLIP alone (the open-vocabulary branch's pooling)
PROMPT_LABELS = ("queries", "clip")
