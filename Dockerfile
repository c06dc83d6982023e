# diffbox for a GPU pod (RunPod and the like). Build: docker build -t diffbox .
# The base image brings CUDA and a CUDA build of torch, which satisfies requirements.txt's torch>=2.6,
# so pip does not fetch torch again.
FROM pytorch/pytorch:2.8.0-cuda12.8-cudnn9-runtime

# ffmpeg + ffprobe: the streaming video player (SVI) needs the system binaries; curl: the healthcheck.
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends ffmpeg curl \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /opt/diffbox
COPY requirements.txt .
RUN pip install --no-cache-dir -r requirements.txt \
    && pip install --no-cache-dir --no-deps spandrel==0.4.2
COPY . .

# Everything the user owns lives on the volume (/workspace survives pod restarts): models, outputs,
# db, logs, and the Hugging Face cache. The container disk is thrown away on stop.
ENV DIFFBOX_HOME=/workspace/diffbox \
    HF_HOME=/workspace/diffbox/cache/huggingface \
    HF_XET_HIGH_PERFORMANCE=1 \
    GRADIO_ANALYTICS_ENABLED=False \
    PYTHONUNBUFFERED=1

EXPOSE 7860
HEALTHCHECK --interval=30s --timeout=5s --start-period=180s --retries=3 \
    CMD curl -fsS http://127.0.0.1:7860/health || exit 1

# On 0.0.0.0 a login is required: DIFFBOX_AUTH (the RunPod template takes it from a secret), else a
# password is generated and printed once in the container's log.
CMD ["python", "app.py", "--host", "0.0.0.0", "--port", "7860"]
