from fedrank.cli import main

raise SystemExit(main())
