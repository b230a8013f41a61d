from nvrag.app.cli import main

main()
