from stance_studio.cli import main

raise SystemExit(main())
