from .inference import (InferenceError, init_recognizer, plot_timeline,
                        predict_timeline, predict_video, read_label_map)

__all__ = [
    'InferenceError', 'init_recognizer', 'plot_timeline', 'predict_timeline',
    'predict_video', 'read_label_map'
]
