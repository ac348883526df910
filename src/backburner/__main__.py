from backburner.cli import main

main()
