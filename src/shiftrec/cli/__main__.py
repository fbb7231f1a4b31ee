from shiftrec.cli.app import main

main()
