from .continual import continual_frame_indices, predict_continual
from .inference import (InferenceError, init_recognizer, plot_timeline,
                        predict_timeline, predict_video, read_label_map)

__all__ = [
    'InferenceError', 'continual_frame_indices', 'init_recognizer',
    'plot_timeline', 'predict_continual', 'predict_timeline',
    'predict_video', 'read_label_map'
]
