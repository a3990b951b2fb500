"""Finding and fetching weights (layer 2 of 6, above core): pegu's cache, Kaggle inputs, the
Hugging Face cache and Hub, downloads and offline copies. :mod:`.resolve` is the one
resolver; :mod:`.files`, :mod:`.kaggle` and :mod:`.ncnn` are what it reads."""
from .files import download, first_line, load_state_dict, read_weights, sha256_file, tensor_names
from .kaggle import attached_inputs, find_attached, input_root, on_kaggle
from .ncnn import ncnn_files, ncnn_state_dict
from .resolve import (at_hand, availability, cache_dir, cached_file, fetch_file,
                      file_availability, from_pretrained, is_offline, locate_repo, offline_env)

__all__ = ["at_hand", "attached_inputs", "availability", "cache_dir", "cached_file", "download",
           "fetch_file", "first_line", "file_availability", "find_attached", "from_pretrained", "input_root", "is_offline",
           "load_state_dict", "locate_repo", "ncnn_files", "ncnn_state_dict", "offline_env",
           "on_kaggle", "read_weights", "sha256_file", "tensor_names"]
