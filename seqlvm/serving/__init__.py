"""`seqlvm serve`: a model as a Ray Serve application with a JSON HTTP API, one path per operation of
`seqlvm.operations.ModelOperations`. Only the command line imports this package.

    settings.py   what to serve and how (`ServeSettings`), checked before Ray starts
    source.py     where the model comes from: a registered version or alias, or a checkpoint
    follower.py   the model a replica answers with, reloaded in the background when its alias moves
    schemas.py    the requests and answers of the API
    batching.py   queued requests with identical options answered by one model call
    media.py      frames rendered as files (wav, MIDI, PNG) in an answer
    errors.py     every refusal as a 4xx with a one-line reason
    service.py    the deployment: the FastAPI ingress and its replicas
    launch.py     deploying, finding and stopping the application on a Ray cluster
"""
