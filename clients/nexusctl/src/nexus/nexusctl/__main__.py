from nexus.nexusctl.main import main

main()
