"""HTTP routers, one module per resource; api/app.py includes them."""
