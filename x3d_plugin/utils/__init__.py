from .state_dict import describe_mismatch, load_state_dict_checked

__all__ = ['describe_mismatch', 'load_state_dict_checked']
