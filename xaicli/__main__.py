from xaicli.cli.app import main

if __name__ == "__main__":
    main()
