"""X3D's own method as a tool: progressive forward expansion and backward
contraction (paper section 3), each candidate an ordinary training run,
locally or on Ray. The command line is ``tools/expand.py``."""
from .configs import ExpansionConfigError, complexity, point_config
from .launchers import Job, LocalLauncher, RayLauncher, run_job
from .search import Search, SearchError, SearchState, Settings
from .space import AXES, Limits, Point, contractions, expand, why_not, x2d

__all__ = [
    'AXES', 'ExpansionConfigError', 'Job', 'Limits', 'LocalLauncher',
    'Point', 'RayLauncher', 'Search', 'SearchError', 'SearchState',
    'Settings', 'complexity', 'contractions', 'expand', 'point_config',
    'run_job', 'why_not', 'x2d'
]
