"""imgcap's command-line uploader: a folder of photos to an imgcap server through its public REST API.

Standard library only (no Django, no TensorFlow), so it runs anywhere Python does:
`python -m imgcap_client upload DIR --server URL --token TOKEN`.
"""

__version__ = "0.1.0"
