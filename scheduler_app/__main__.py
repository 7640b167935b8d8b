from scheduler_app.cli.main import main

main()
