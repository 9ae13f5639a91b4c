"""The ceiling for bench/throughput.py: a bare Flask route that accepts a JSON webhook."""

from flask import Flask, jsonify, request

app = Flask(__name__)


@app.get("/health")
def health():
    return jsonify({"status": "ok"})


@app.post("/hooks/<token>")
def hook(token: str):
    data = request.get_json(force=True, silent=True) or {}
    return jsonify({"accepted": True, "keys": len(data)}), 202
