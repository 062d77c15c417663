"""python -m edgecpm"""

from edgecpm.app.cli import main

main()
