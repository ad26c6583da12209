"""geotrain: an ArcGIS-compatible TrainDeepLearningModel job server."""

__version__ = "0.1.0"
