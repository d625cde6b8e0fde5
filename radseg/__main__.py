from radseg.cli import main

raise SystemExit(main())
