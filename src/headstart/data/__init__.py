"""Data: read image folders, CSVs and in-memory images; validate; split; pre-process."""
from .datasets import ImageDataset, load_dataset, stratified_split
from .images import IMAGE_EXTENSIONS, content_hash, open_image
from .transforms import Augment, Preprocess

__all__ = ["ImageDataset", "load_dataset", "stratified_split", "IMAGE_EXTENSIONS",
           "content_hash", "open_image", "Augment", "Preprocess"]
