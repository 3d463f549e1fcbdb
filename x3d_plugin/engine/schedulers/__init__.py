from .warmup_cosine import WarmupCosineLR, warmup_cosine_factor

__all__ = ['WarmupCosineLR', 'warmup_cosine_factor']
