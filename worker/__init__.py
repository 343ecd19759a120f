"""Celery worker side of the platform: tasks, the per-process captioner and the micro-batcher.

Only this package may import TensorFlow (through `ml.captioner`), and only lazily, so the web
process can import `worker.tasks` (Celery autodiscovery) without loading it.
"""
