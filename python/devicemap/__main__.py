from devicemap.cli import main

raise SystemExit(main())
