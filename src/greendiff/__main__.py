from greendiff.cli import main

main()
