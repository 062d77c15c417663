"""python -m edgecpm"""

from edgecpm.cli import main

main()
