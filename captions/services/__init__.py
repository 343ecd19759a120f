"""Every write to captions' data, one module per concept; views, serializers, commands and worker
tasks call these and stay thin (reads are in captions/selectors.py, the captioning queue in
captions/queue.py).

- intake.py: every way images arrive funnels into one path that checks, stores and queues them
- files.py: the stored image files (named by their SHA-256)
- images.py: the changes people make to an image: captions, visibility, re-captioning, deletion
- model_versions.py: the model versions captions come from, and which one is shown
- accounts.py: API tokens
"""
