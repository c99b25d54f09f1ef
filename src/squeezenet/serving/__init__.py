"""``squeezenet serve``: an HTTP service and a web page for one model, swappable while it serves.

The server process never imports PyTorch (it would cost about 1 GB of resident memory): it
holds an ONNX Runtime session of the project's default graph (concat-free, with the
class-activation maps as a second output) and decodes images with Pillow and NumPy. Turning a
weights file of any format into that graph needs PyTorch, so it runs in a short-lived child
process (``python -m squeezenet.serving.convert``), which also checks the new model before the
server swaps it in.

Modules: ``config`` (options and limits), ``preprocess`` (decoding and the weights' own
preprocessing without torchvision), ``memory`` (what an image costs to decode, the budget of
images in flight, the allocator), ``convert`` (the child process), ``conversion`` (running it: the
cores it gets, cancellation), ``model`` (loading aside, checking, the converted models kept by
hash, atomic swap), ``batching`` (dynamic batching off the event loop), ``connections`` (the
header timeout and the connection limits, in uvicorn's protocol), ``metrics``
(Prometheus and the middleware that counts requests), ``service`` (what the routes share),
``schemas`` (every body of the API as a pydantic model: the OpenAPI text comes from them),
``bodies`` (reading uploads under limits), ``auth`` (the bearer token, a dependency),
``routes/`` (one router per concern: the page, health and metrics, classify, the model),
``app`` (the FastAPI app: routers, problem bodies, middleware), ``server`` (uvicorn),
``watch`` (the watched weights file), ``static/`` (the page).
"""
