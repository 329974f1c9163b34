"""Connection options for `MqttBus`; embedded in every role's settings as `broker`."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, Field


class TlsOptions(BaseModel):
    ca_file: Path = Field(description="CA certificate (PEM) that signed the broker's certificate")
    cert_file: Path | None = Field(None, description="client certificate (PEM) for mutual TLS")
    key_file: Path | None = Field(None, description="client private key (PEM) for mutual TLS")
    insecure_skip_hostname: bool = Field(False, description="skip the broker hostname check (lab use only)")


class MqttOptions(BaseModel):
    host: str = Field("127.0.0.1", description="broker host name or address")
    port: int = Field(1883, ge=1, le=65535, description="broker port (8883 for TLS by convention)")
    client_id: str | None = Field(None, description="MQTT client id; default: the agent id (ACLs use it)")
    username: str | None = Field(None, description="username for password authentication")
    password: str | None = Field(None, description="password for password authentication")
    tls: TlsOptions | None = Field(None, description="TLS / mutual TLS; omit for plain TCP")
    keepalive_s: int = Field(30, ge=5, description="MQTT keepalive in seconds")
    session_expiry_s: int = Field(3600, ge=0, description="persistent session lifetime after a disconnect")
    max_payload_bytes: int = Field(16 * 1024 * 1024, ge=1024, description="largest payload sent or accepted")
    reconnect_min_s: float = Field(0.5, gt=0, description="first reconnect delay")
    reconnect_max_s: float = Field(30.0, gt=0, description="cap of the exponential reconnect backoff")
    ack_timeout_s: float = Field(10.0, gt=0, description="how long a QoS 1 publish waits for its PUBACK")
