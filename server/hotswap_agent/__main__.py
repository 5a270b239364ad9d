from hotswap_agent.cli import main

raise SystemExit(main())
