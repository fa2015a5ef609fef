"""`python -m lmsav …` runs the same program as the `lmsav` executable."""

from .launcher import main

main()
