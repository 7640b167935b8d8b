from scheduler_app.cli import main

main()
