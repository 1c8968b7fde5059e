from vaebench.aggregate.cli import main

main()
