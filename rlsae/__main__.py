from rlsae.cli import main

main()
