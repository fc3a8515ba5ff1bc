"""Data: read image folders, CSVs, texts and in-memory images; validate; split; pre-process.
Which reader a dataset goes through is the modality's choice (modalities.load_dataset)."""
from .datasets import ImageDataset, LabelledData, stratified_split
from .images import IMAGE_EXTENSIONS, content_hash, open_image
from .transforms import Augment, Preprocess

__all__ = ["ImageDataset", "LabelledData", "stratified_split", "IMAGE_EXTENSIONS",
           "content_hash", "open_image", "Augment", "Preprocess"]
