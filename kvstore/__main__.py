from kvstore.ops.cli import main

main()
