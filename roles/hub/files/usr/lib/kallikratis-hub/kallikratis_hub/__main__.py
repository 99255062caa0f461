from kallikratis_hub.cli import main

raise SystemExit(main())
