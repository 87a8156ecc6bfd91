from monitor.demo.run import main

raise SystemExit(main())
