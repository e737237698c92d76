"""stub"""

EXPERIMENTS = ()
