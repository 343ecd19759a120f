"""Readers for captioned-image datasets (Flickr8k, Flickr30k, COCO, Karpathy splits, plain CSV,
img2dataset folders and webdataset shards).

Every format yields a CaptionDataset of CaptionRecords; see `load_dataset`.
"""

from __future__ import annotations

from ml.data.loader import DATASET_FORMATS, load_dataset
from ml.data.records import CaptionDataset, CaptionRecord, DatasetError
from ml.data.summary import dataset_summary

__all__ = [
    "DATASET_FORMATS",
    "CaptionDataset",
    "CaptionRecord",
    "DatasetError",
    "dataset_summary",
    "load_dataset",
]
