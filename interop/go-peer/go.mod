module accessfabric.example/gopeer

go 1.19
