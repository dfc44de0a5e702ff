"""OMG-Seg: one model for image, video, open-vocabulary and interactive segmentation.

``import omg`` is cheap: it pulls in neither torch, ray nor mlflow. Submodules import
what they need.
"""

__version__ = "0.2.0"
