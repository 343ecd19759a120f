"""`python -m imgcap_client …`"""

from imgcap_client.cli import main

raise SystemExit(main())
