"""CAM methods re-implemented where grad-cam's own code has a speed, memory or output trap.

Each module reproduces one pytorch_grad_cam method (same map, tested against it) and
plugs into the pipeline of xaicli/explain/cam.py.
"""
