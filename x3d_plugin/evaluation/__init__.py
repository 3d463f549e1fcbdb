from .metrics import AVAMetric

__all__ = ['AVAMetric']
