from ncebpf.cli import main

main()
