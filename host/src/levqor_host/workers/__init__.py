"""Workers: the embedded executor, the Celery executor and the scheduler, handed their services."""
